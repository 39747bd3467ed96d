"""The WebSocket connection layer: frame codec, parking of hibernated sockets, gateway."""
