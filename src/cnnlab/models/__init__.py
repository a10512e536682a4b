"""Models: one registry of architectures, plus networks written as YAML layer lists."""
