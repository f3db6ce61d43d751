"""One-layer OCI image layouts for `ctr images import` (image-spec v1.0: oci-layout,
index.json, blobs/sha256/...), with no registry: the index entry's io.containerd.image.name
annotation names the image. Used by tools/build-pod-image.sh (busybox) and
tools/build-cri-files.sh (the CRI sandbox image). Deterministic: the same input gives the
same bytes (mtime 0 everywhere)."""
import hashlib
import io
import json
import tarfile


def add(tar, name, data, mode=0o644):
    """A regular file `name` holding `data` in `tar`."""
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime = len(data), mode, 0
    tar.addfile(ti, io.BytesIO(data))


def layer(fill):
    """The bytes of a layer tar that fill(tar) populates."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w', format=tarfile.GNU_FORMAT) as t:
        fill(t)
    return buf.getvalue()


def write(path, name, layer_bytes, config):
    """Writes the layout tar to `path`: image `name` (e.g. docker.io/kestrel/pause:test), one
    layer, `config` the image config's "config" object (Entrypoint, Cmd, Env, WorkingDir)."""
    sha = lambda b: 'sha256:' + hashlib.sha256(b).hexdigest()
    cfg = json.dumps({'architecture': 'amd64', 'os': 'linux', 'config': config,
                      'rootfs': {'type': 'layers', 'diff_ids': [sha(layer_bytes)]}}).encode()
    manifest = json.dumps({
        'schemaVersion': 2, 'mediaType': 'application/vnd.oci.image.manifest.v1+json',
        'config': {'mediaType': 'application/vnd.oci.image.config.v1+json', 'digest': sha(cfg), 'size': len(cfg)},
        'layers': [{'mediaType': 'application/vnd.oci.image.layer.v1.tar', 'digest': sha(layer_bytes),
                    'size': len(layer_bytes)}]}).encode()
    index = json.dumps({'schemaVersion': 2, 'manifests': [{
        'mediaType': 'application/vnd.oci.image.manifest.v1+json', 'digest': sha(manifest), 'size': len(manifest),
        'platform': {'architecture': 'amd64', 'os': 'linux'},
        'annotations': {'io.containerd.image.name': name, 'org.opencontainers.image.ref.name': 'test'}}]}).encode()
    with tarfile.open(path, 'w') as t:
        add(t, 'oci-layout', b'{"imageLayoutVersion":"1.0.0"}')
        add(t, 'index.json', index)
        for blob in (layer_bytes, cfg, manifest):
            add(t, 'blobs/sha256/' + hashlib.sha256(blob).hexdigest(), blob)
