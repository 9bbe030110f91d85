"""The definition language: the type model, the data-flow check, and what turns definitions into plans."""
