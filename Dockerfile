# saedex API. CPU-only torch wheel (a bare `torch` would pull a multi-GB CUDA build).
FROM python:3.11-slim
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 SAEDEX_HOME=/data HF_HUB_OFFLINE=1
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY indexer ./indexer
COPY search ./search
COPY analyses ./analyses
COPY server ./server
RUN pip install .
EXPOSE 8000
CMD ["saedex", "serve", "--host", "0.0.0.0", "--port", "8000"]
