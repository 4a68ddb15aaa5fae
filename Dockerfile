# raylm's image: Ray's own GPU image for the pinned Ray and Python (constraints.txt, pyproject.toml), with raylm
# and every pin (torch and its CUDA libraries included) installed at build time, so a node that has pulled it
# starts trials at once: nothing is pip-installed at boot. cluster.yaml and deploy/kuberay/ name it.
# From the repository root (README, "The image"):
#   docker build --build-arg RAYLM_COMMIT=$(git rev-parse HEAD) -t REGISTRY/raylm:$(git rev-parse --short HEAD) .
#   docker push REGISTRY/raylm:$(git rev-parse --short HEAD)
FROM rayproject/ray:2.60.0-py311-gpu

# Made by the image's user (`ray`): a folder WORKDIR makes would be root's under some builders.
RUN mkdir -p /home/ray/raylm
WORKDIR /home/ray/raylm
# The pins first, with an empty package and README: this layer (the multi-GB one) is rebuilt only when the pins
# change.
COPY --chown=ray:users pyproject.toml constraints.txt ./
RUN mkdir raylm && touch raylm/__init__.py README.md \
    && pip install --no-cache-dir -c constraints.txt -e '.[cluster]' \
    && rm -r raylm README.md
# The code and the study files; the install above is editable, so it runs this code.
COPY --chown=ray:users raylm ./raylm
COPY --chown=ray:users experiments ./experiments
# The image has no .git: resolved configs and model cards record the commit it was built from.
ARG RAYLM_COMMIT=""
ENV RAYLM_COMMIT=${RAYLM_COMMIT}
