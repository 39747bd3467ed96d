"""The edge-chat demo on trio_durable; ``trio-durable serve examples.chat:app``."""

from .server import ChatConfig as ChatConfig
from .server import ChatRoom as ChatRoom
from .server import Member as Member
from .server import RateLimiter as RateLimiter
from .server import app as app
from .server import make_app as make_app
from .server import worker as worker
