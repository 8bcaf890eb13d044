"""HTTP/1.1 reverse proxy: strict parsing, header rewriting, client and upstream protocols."""
