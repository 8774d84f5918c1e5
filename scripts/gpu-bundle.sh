#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on a GPU machine that has torch but reaches no package registry,
# into .gpu/ (git-ignored; carry it with the check):
#   .gpu/site.tar.gz  the cp312 manylinux wheels of the packages such a machine lacks, unzipped into one
#                     site folder; dm_control's locomotion, dog assets, tests and blender folders are left
#                     out (the check never imports them), so the whole bundle stays well under 64 MiB
#   .gpu/gl/*.deb     EGL / OpenGL libraries for headless MuJoCo rendering (MUJOCO_GL=egl)
# Versions are the ones this project installs on the CPU (pyproject extras, constraints/cpu.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PACKAGES=(mujoco==3.17.0 dm_control==1.0.50 gymnasium==1.4.0 Farama-Notifications==0.0.6 tyro==1.0.17
          docstring_parser==0.18.0 typeguard==4.6.1 ale-py==0.12.1 labmaze==1.0.6 dm-env==1.6 dm-tree==0.1.10
          PyOpenGL==3.1.10 glfw==2.11.0)
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux1_x86_64 any; do PLATFORMS+=(--platform "$p"); done
rm -rf .gpu/wheels .gpu/site && mkdir -p .gpu/wheels .gpu/site .gpu/gl
for pkg in "${PACKAGES[@]}"; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
    -d .gpu/wheels "$pkg"
done
for whl in .gpu/wheels/*.whl; do "$PY" -m zipfile -e "$whl" .gpu/site; done
rm -rf .gpu/site/dm_control/locomotion .gpu/site/dm_control/suite/dog_assets .gpu/site/dm_control/mujoco/testing \
       .gpu/site/dm_control/blender
tar -C .gpu -czf .gpu/site.tar.gz site
rm -rf .gpu/wheels .gpu/site
if command -v apt-get >/dev/null; then
  o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
  mkdir -p /tmp/amd64/partial
  apt-get "${o[@]}" update -qq
  (cd .gpu/gl && apt-get "${o[@]}" download -qq libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi
du -sh .gpu/site.tar.gz .gpu/gl
