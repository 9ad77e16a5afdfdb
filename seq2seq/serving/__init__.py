"""Serving model directories over HTTP: seq2seq-serve (FastAPI + uvicorn) and its web page."""
