"""RTP (RFC 3550): the wire format (pure) and the UDP socket toward Asterisk."""
