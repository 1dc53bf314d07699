"""The INSECURE development TEE: TDX-shaped reports signed by a locally generated root.

Accepted only in the ``insecure-dev`` profile, only under a policy that names ``sim``, and only
when the deployment pins its sim root. Everything it produces says ``insecure``.
"""
