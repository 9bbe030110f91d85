"""Side-by-side measurements of Machinery: overhead, throughput, scale, peers, memory and the hot path."""
