"""The serving layer: the engine (one search entry point), live writes, docid allocation, tenant namespaces."""
