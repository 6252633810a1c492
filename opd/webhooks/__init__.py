"""Admission and conversion webhooks: the HTTPS server the API server calls, its certificates,
the reviews it answers, and the cluster objects that point the API server at it.

- ``certificates``: a self-signed CA and a serving certificate (``cryptography``), per process
  or kept in a folder.
- ``bodies``: a request body bounded before it is trusted: size, encoding, JSON decoding, shape.
- ``listening``: the listener's bounds: connections, time per step, bytes held by bodies.
- ``server``: ``WebhookServer`` (aiohttp over TLS); one server can carry the webhooks of several
  operators (the daemon's plugins), a path each.
- ``variants``: Kopf's named variants for clusters in a VM or container (the host they advertise).
- ``admission``, ``conversion``: AdmissionReview and ConversionReview in, responses out.
- ``management``: the Validating/MutatingWebhookConfiguration and the CRDs' ``spec.conversion``.
- ``serving``: one operator's webhooks, started by its Operation after its startup handlers.
"""
