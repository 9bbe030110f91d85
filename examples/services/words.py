"""The `words` example service: splits a text into its words (an array, for a map to run over)."""

from common import text_service

app = text_service("words", "service-words.json", lambda text: text.split())

if __name__ == "__main__":
    app.run(host="0.0.0.0", port=5000)
