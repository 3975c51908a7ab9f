"""The prediction service (FastAPI, batching, logging); it arrives with its own issue."""
