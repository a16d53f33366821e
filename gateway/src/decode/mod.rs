//! pgoutput decoding: bytes in, typed messages out. Pure: no I/O, no tokio.
