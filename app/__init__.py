"""imagehook: a callback-driven gateway for asynchronous image generation."""
