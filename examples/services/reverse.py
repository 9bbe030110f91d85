"""The `reverse` example service: reverses a text."""

from common import text_service

app = text_service("reverse", "service-reverse.json", lambda text: text[::-1])

if __name__ == "__main__":
    app.run(host="0.0.0.0", port=5000)
