#!/usr/bin/python3
"""One call of Kubernetes' CRI API (runtime.v1 RuntimeService / ImageService) over gRPC, as
one crictl step: the request is protobuf JSON (proto field names), the answer is printed as
JSON, or only the fields named by --get. The messages are api_pb2.py, generated at build time
from the CRI api.proto (gen_api.py); the methods come from its service descriptors, so no
generated gRPC stub is needed. Run with Debian's /usr/bin/python3 (python3-grpcio,
python3-protobuf).

usage: cri-client.py [--address unix:///PATH] [--timeout S] SERVICE/METHOD [JSON|@FILE]
                     [--get FIELD.PATH]...
  e.g. cri-client.py RuntimeService/ContainerStatus '{"container_id": "ab12"}' --get status.exit_code
--get walks message fields, map keys and list indexes (containers.0.id); a bytes field is
written raw (ExecSync's stdout), an enum by its name, a message as JSON; one value a line.
Exit status: 0 answered, 1 the call failed (gRPC status on stderr), 2 bad usage or input.
"""
import argparse, os, sys

MAX_REQUEST = 1 << 20  # a CRI request in JSON is a few KiB; refuse anything absurd


def die(msg, code=2):
    print(f'cri-client: {msg}', file=sys.stderr)
    sys.exit(code)


sys.path.insert(0, os.environ.get('KESTREL_CRI_STUBS') or os.path.dirname(os.path.abspath(__file__)))
try:
    import grpc
    from google.protobuf import descriptor_pb2, json_format, message
    import api_pb2
except ImportError as e:
    die(f'{e} (needs python3-grpcio and python3-protobuf, and api_pb2.py from the build: '
        'next to this script or in $KESTREL_CRI_STUBS)')


def method_of(name):
    svc, _, meth = name.partition('/')
    service = api_pb2.DESCRIPTOR.services_by_name.get(svc)
    if service is None or not meth:
        die(f'{name}: want SERVICE/METHOD with SERVICE one of {", ".join(api_pb2.DESCRIPTOR.services_by_name)}')
    m = service.methods_by_name.get(meth)
    if m is None:
        die(f'{svc} has no method {meth} (it has: {", ".join(service.methods_by_name)})')
    proto = descriptor_pb2.MethodDescriptorProto()
    m.CopyToProto(proto)
    if proto.client_streaming or proto.server_streaming:
        die(f'{name} is a streaming method: not supported')
    return service.full_name, m, getattr(api_pb2, m.input_type.name), getattr(api_pb2, m.output_type.name)


def read_request(cls, text):
    if text.startswith('@'):
        try:
            with open(text[1:], 'rb') as f:
                data = f.read(MAX_REQUEST + 1)
        except OSError as e:
            die(f'cannot read {text[1:]}: {e.strerror}')
        try:
            text = data.decode()
        except UnicodeDecodeError:
            die(f'{text[1:]} is not UTF-8')
    if len(text) > MAX_REQUEST:
        die(f'request longer than {MAX_REQUEST} bytes')
    try:
        return json_format.Parse(text, cls())
    except json_format.ParseError as e:
        die(f'request is not a valid {cls.DESCRIPTOR.name}: {e}')


def get(msg, path):
    """(value, field descriptor of the last step or None)"""
    cur, fd = msg, None
    for part in path.split('.'):
        if isinstance(cur, message.Message):
            fd = cur.DESCRIPTOR.fields_by_name.get(part)
            if fd is None:
                die(f'--get {path}: {cur.DESCRIPTOR.name} has no field "{part}"')
            cur = getattr(cur, part)
        elif fd is not None and fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            if part not in cur:
                die(f'--get {path}: no key "{part}"', 1)
            cur = cur[part]
            fd = fd.message_type.fields_by_name['value']
        elif fd is not None and fd.label == fd.LABEL_REPEATED:
            if not part.isdigit() or int(part) >= len(cur):
                die(f'--get {path}: "{part}" is not an index below {len(cur)}', 1)
            cur = cur[int(part)]
        else:
            die(f'--get {path}: "{part}" goes past a {type(cur).__name__}')
    return cur, fd


def show(value, fd):
    if isinstance(value, message.Message):
        print(json_format.MessageToJson(value, preserving_proto_field_name=True, indent=None))
    elif isinstance(value, bytes):
        sys.stdout.flush()
        sys.stdout.buffer.write(value)
        sys.stdout.buffer.flush()
    elif fd is not None and fd.enum_type is not None and isinstance(value, int):
        v = fd.enum_type.values_by_number.get(value)
        print(v.name if v else value)
    elif isinstance(value, bool):
        print('true' if value else 'false')
    elif fd is not None and fd.label == fd.LABEL_REPEATED and not isinstance(value, str):
        for v in value:
            show(v, None)
    else:
        print(value)


def main():
    ap = argparse.ArgumentParser(description='one CRI call (see the file header)')
    ap.add_argument('--address', default='unix:///run/containerd/containerd.sock')
    ap.add_argument('--timeout', type=float, default=600.0, help='seconds for the call (default 600)')
    ap.add_argument('--get', action='append', default=[], metavar='FIELD.PATH')
    ap.add_argument('method', metavar='SERVICE/METHOD')
    ap.add_argument('request', nargs='?', default='{}', metavar='JSON|@FILE')
    a = ap.parse_args()
    if not a.timeout > 0:
        die('--timeout must be positive')
    address = a.address if '://' in a.address or a.address.startswith('unix:') else 'unix:' + a.address
    service, m, req_cls, resp_cls = method_of(a.method)
    req = read_request(req_cls, a.request)
    with grpc.insecure_channel(address) as ch:
        call = ch.unary_unary(f'/{service}/{m.name}', request_serializer=req_cls.SerializeToString,
                              response_deserializer=resp_cls.FromString)
        try:
            resp = call(req, timeout=a.timeout)
        except grpc.RpcError as e:
            die(f'{a.method}: {e.code().name}: {e.details()}', 1)
    if not a.get:
        show(resp, None)
    for path in a.get:
        show(*get(resp, path))


if __name__ == '__main__':
    main()
