"""Generated gRPC stubs for genret.v1 (produced by `make proto`; never edited by hand)."""
