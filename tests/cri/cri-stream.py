#!/usr/bin/python3
"""The streaming half of CRI Exec and Attach, as kubectl exec/attach speak it: connects to the
URL an Exec or Attach call returned (containerd's streaming server) over WebSocket with the
Kubernetes channel protocol v4.channel.k8s.io (one byte of channel before each message's data:
0 stdin, 1 stdout, 2 stderr, 3 the error channel, which carries a JSON metav1.Status at the
end, 4 terminal resizes as JSON {"Width", "Height"}), sends --resize's size, then each
--stdin-line with a newline, then prints what arrives until the server closes the stream:
  stdout LINE / stderr LINE   one per line received (a last line without '\n' too)
  exit_code N                 from the Status: Success = 0, NonZeroExitCode = its ExitCode
                              cause; absent when the server sent no Status
  status_message TEXT         a Failure's message
The WebSocket client is Debian's python3-websocket (websocket-client).

usage: cri-stream.py URL [--resize COLSxROWS] [--stdin-line TEXT]... [--timeout S]
Exit status: 0 the stream ended, 1 it could not be opened or timed out, 2 bad usage.
"""
import argparse, json, sys

try:
    import websocket
except ImportError as e:
    print(f'cri-stream: {e} (apt-get install python3-websocket)', file=sys.stderr)
    sys.exit(2)

PROTOCOL = 'v4.channel.k8s.io'
STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
MAX_BYTES = 16 << 20   # what one exec in a test prints is small; stop a runaway stream


def exit_code_of(status):
    """Kubernetes' remotecommand v4: Success, or Failure with reason NonZeroExitCode and the
    code as the message of the cause with reason ExitCode."""
    if status.get('status') == 'Success':
        return 0
    for cause in (status.get('details') or {}).get('causes') or []:
        if cause.get('reason') == 'ExitCode':
            try:
                return int(cause.get('message', ''))
            except ValueError:
                break
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('url')
    ap.add_argument('--stdin-line', action='append', default=[], help="a line sent on stdin once connected ('\\n' added)")
    ap.add_argument('--resize', metavar='COLSxROWS', help='a terminal size sent once connected (exec -t)')
    ap.add_argument('--timeout', type=float, default=120.0, help='seconds without data before giving up')
    args = ap.parse_args()
    if not args.url.startswith(('http://', 'https://')):
        print(f'cri-stream: {args.url!r}: want the http(s) URL an Exec or Attach call returned', file=sys.stderr)
        return 2
    resize = None
    if args.resize is not None:
        cols, _, rows = args.resize.partition('x')
        if not (cols.isdigit() and rows.isdigit() and 0 < int(cols) < 65536 and 0 < int(rows) < 65536):
            print(f'cri-stream: --resize {args.resize!r}: want COLSxROWS, each 1..65535', file=sys.stderr)
            return 2
        resize = json.dumps({'Width': int(cols), 'Height': int(rows)}).encode()
    url = 'ws' + args.url[len('http'):]
    try:
        ws = websocket.create_connection(url, subprotocols=[PROTOCOL], timeout=args.timeout)
    except (OSError, websocket.WebSocketException) as e:
        print(f'cri-stream: connecting to {url}: {e}', file=sys.stderr)
        return 1
    got = {STDOUT: b'', STDERR: b''}
    status = None
    total = 0
    try:
        if resize is not None:
            ws.send_binary(bytes([RESIZE]) + resize)
        for ln in args.stdin_line:
            ws.send_binary(bytes([STDIN]) + ln.encode() + b'\n')
        while True:
            op, data = ws.recv_data()
            if op == websocket.ABNF.OPCODE_CLOSE:
                break
            if not data:
                continue   # the server opens each channel with an empty message
            total += len(data)
            if total > MAX_BYTES:
                print(f'cri-stream: more than {MAX_BYTES} bytes: stopped', file=sys.stderr)
                return 1
            chan, body = data[0], data[1:]
            if chan in got:
                got[chan] += body
            elif chan == ERROR:
                try:
                    status = json.loads(body)
                except ValueError:
                    status = {'status': 'Failure', 'message': body.decode('utf-8', 'replace')}
    except websocket.WebSocketConnectionClosedException:
        pass   # closed without a close frame: the stream is over all the same
    except (OSError, websocket.WebSocketException) as e:
        print(f'cri-stream: {url}: {e}', file=sys.stderr)
        return 1
    finally:
        ws.close()
    for chan, name in ((STDOUT, 'stdout'), (STDERR, 'stderr')):
        for ln in got[chan].decode('utf-8', 'replace').splitlines():
            print(f'{name} {ln}')
    if status is not None:
        code = exit_code_of(status)
        if code is not None:
            print(f'exit_code {code}')
        if status.get('status') != 'Success':
            print(f'status_message {status.get("message", "")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
