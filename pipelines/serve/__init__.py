"""`recstream serve`: the champions over HTTP (FastAPI + uvicorn), features read online through Feast."""
