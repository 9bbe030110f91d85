"""The `space-counter` example service: counts the spaces in a text."""

from common import text_service

app = text_service("space-counter", "service-space-counter.json", lambda text: text.count(" "))

if __name__ == "__main__":
    app.run(host="0.0.0.0", port=5000)
