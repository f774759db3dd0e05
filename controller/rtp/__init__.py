"""RTP (RFC 3550): packets and sequence arithmetic (pure), playout pacing, UDP endpoint."""
