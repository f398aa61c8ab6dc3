"""The local runner's stand-ins: read template.yaml, fake AWS in-process, route events like EventBridge.

Needs the ``local`` extra (moto, PyYAML); never imported by a deployed function.
"""
