"""The `upper` example service: turns a text into uppercase."""

from common import text_service

app = text_service("upper", "service-upper.json", str.upper)

if __name__ == "__main__":
    app.run(host="0.0.0.0", port=5000)
