"""slipway's local AWS: moto in-process plus a realism layer.

See docs/testing.md, section "The local AWS".
"""
