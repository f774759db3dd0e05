"""Per-call media: the shared 20 ms clock, playout, gap filling, and the CallMedia API."""
