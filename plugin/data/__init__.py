"""The data layer: BEIR collections, loading them into Qdrant, embedding text, the index directory on disk."""
