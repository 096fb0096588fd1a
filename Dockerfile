# The freshtower pipeline image: TFX 1.16's image (Python 3.10) with the
# exact package set of requirements.lock and this project on top. Every
# component of the compiled pipeline runs in it.
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/freshtower:TAG .
FROM gcr.io/tfx-oss-public/tfx:1.16.0

# Keras 2 for TensorFlow Recommenders, before TensorFlow is imported.
ENV TF_USE_LEGACY_KERAS=1 \
    PYTHONWARNINGS=ignore::FutureWarning \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/freshtower

# The pinned set first: it changes less often than the code.
COPY requirements.lock .
RUN python -m pip install "pip==24.3.1" \
    && python -m pip install --no-deps -r requirements.lock

COPY pyproject.toml README.md ./
COPY pipeline pipeline
COPY components components
COPY models models
COPY kubeflow kubeflow
# kubeflow.runner.IMAGE_SCHEMA_DIR points here.
COPY schema schema
RUN python -m pip install --no-deps --no-build-isolation . \
    && python -m pip check \
    && python -c "import components, kubeflow, models, pipeline"
