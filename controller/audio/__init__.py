"""Audio: G.711 codecs (numpy lookup tables) and stateful soxr resampling."""
