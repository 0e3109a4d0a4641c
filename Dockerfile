# The server image the emitted Kubernetes manifests run (`optiserve serve`).
# Written for `docker build -t IMAGE .`; never built on the development machines (no container runtime there).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY optiserve ./optiserve
COPY kernels ./kernels
RUN pip install ".[serve]" && rm -rf /src
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin optiserve
USER 10001
EXPOSE 8000
ENTRYPOINT ["optiserve"]
CMD ["--help"]
