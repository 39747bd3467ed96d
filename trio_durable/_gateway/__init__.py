"""The gateway: ``serve()`` answers HTTP/1.1 and WebSocket upgrades on one port."""
