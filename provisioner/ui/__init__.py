"""The operator's web view of the boot server: `provisioner serve` serves it under /ui/ on the admin address.

- view.py: what a row and a machine page show, from the machine log, the installed marks and the
  inventory (pure);
- live.py: pushes changed rows to the open pages (server-sent events), fed by the server's one
  stream of recorded boot events;
- access.py: who may open it (loopback freely, other allowed addresses after the admin token once);
- web.py: the aiohttp routes and the Jinja2 templates in templates/, the few lines of JS in static/.
"""
