# On-device runtime image: edgeasc without the `train` extra, so no torch.
# Multi-arch: the python slim base is published for amd64 and arm64, so
#   docker buildx build --platform linux/amd64,linux/arm64 -t edgeasc-runtime .
# builds an image that runs on a Raspberry Pi with a 64-bit OS.
FROM python:3.11-slim

# libsndfile ships inside the soundfile wheel; nothing else is needed from apt.
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /opt/edgeasc
COPY pyproject.toml README.md ./
COPY edgeasc ./edgeasc
RUN pip install . && useradd --create-home edgeasc
USER edgeasc
WORKDIR /data
ENTRYPOINT ["edgeasc"]
CMD ["--help"]
