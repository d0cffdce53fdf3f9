"""config.pbtxt: rendering from envelopes, parsing, and the rules Triton enforces at load."""
