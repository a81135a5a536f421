"""nnInteractive's server protocol (what ``nninteractive-client`` 2.6.0 speaks) at ``/nninteractive``.

SlicerNNInteractive's remote mode, MITK and napari-nninteractive drive a server through that client:
a lease per viewer (``X-Lease-Token``), JSON metadata in ``X-Meta``, blosc2-compressed array bodies and
replies that carry only the box of the target buffer that changed. Every lease shares the pool's one
copy of the interactive model with the AIAA sessions.

    wire      the array codec (size checked before anything is decompressed)
    leases    lease tokens, idle and liveness expiry, capacity
    state     one lease's target buffer and interaction loop on its image's session (no HTTP)
    door      what every request needs: bearer key, model, lease, X-Meta, body
    routes    the FastAPI routes
"""
