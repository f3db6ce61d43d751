"""What a hung nested host (L1) was doing: its heartbeat log and QEMU's monitor.

L1's /init writes to its second serial port (beat.N.log on the host) its code symbols from
/proc/kallsyms (`ksym ADDR NAME [MODULE]`: Debian's System.map is a stub, and KASLR moves the
kernel), then a `beat` line every 5 s (l1-init.sh). run-tests calls L1 hung when the beats stop
for BEAT_LIMIT_S, and before killing QEMU asks its human monitor (a unix socket) where each
vCPU is, several times, naming the function at each RIP. A vCPU in an L2 guest (SVM guest
mode) shows the guest's RIP, which names nothing here.
"""
import bisect
import os
import re
import socket
import time

BEAT_LIMIT_S = 60
# A RIP further than this past the last symbol below it is not in that function.
MAX_FUNCTION_BYTES = 0x10000


class Beats:
    """The heartbeat log: L1's code symbols and the last beat."""

    def __init__(self, text):
        syms = []
        self.last = ''
        self.count = 0
        for ln in text.replace('\r', '').split('\n'):
            f = ln.split()
            if not f:
                continue
            if f[0] == 'ksym' and len(f) in (3, 4):
                try:
                    syms.append((int(f[1], 16), f[2] + (':' + f[3].strip('[]') if len(f) == 4 else '')))
                except ValueError:
                    continue   # a line cut short
            elif f[0] == 'beat':
                self.last = ln.strip()
                self.count += 1
        syms.sort()
        self.addrs = [a for a, _ in syms]
        self.names = [n for _, n in syms]

    def name(self, addr):
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i >= 0 and addr - self.addrs[i] < MAX_FUNCTION_BYTES:
            return f'{self.names[i]}+{addr - self.addrs[i]:#x}'
        return 'not L1 kernel code (an L2 guest, or user space)'


def monitor(sock_path, commands, timeout=10.0):
    """Runs HMP commands on QEMU's monitor socket; returns {command: output} or raises OSError
    (e.g. a monitor that does not answer: a vCPU thread holding QEMU's big lock)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock_path)
    buf = b''

    def until_prompt():
        nonlocal buf
        while b'(qemu) ' not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise OSError('monitor closed')
            buf += chunk
        out, buf = buf.split(b'(qemu) ', 1)
        return out.decode('utf-8', 'replace')

    try:
        until_prompt()
        res = {}
        for c in commands:
            s.sendall(c.encode() + b'\n')
            text = until_prompt()
            # The monitor echoes the command line (with terminal escapes) first.
            res[c] = re.sub(r'\x1b\[[0-9;]*[A-Za-z]', '', text).replace('\r', '')
        return res
    finally:
        s.close()


def parse_registers(text):
    """`info registers -a`: [{cpu, rip, rsp, cpl, hlt, irq_on}], hlt/irq_on as '0'/'1'/'?'."""
    out = []
    for block in re.split(r'\nCPU#', '\n' + text):
        m = re.match(r'(\d+)', block)
        rip = re.search(r'[RE]IP=([0-9a-f]+)', block)
        if not m or not rip:
            continue
        rsp = re.search(r'[RE]SP=([0-9a-f]+)', block)
        rfl = re.search(r'[RE]FL=([0-9a-f]+)', block)
        cpl = re.search(r'CPL=(\d)', block)
        hlt = re.search(r'HLT=(\d)', block)
        out.append({'cpu': int(m.group(1)), 'rip': int(rip.group(1), 16),
                    'rsp': int(rsp.group(1), 16) if rsp else None,
                    'irq_on': str(int(rfl.group(1), 16) >> 9 & 1) if rfl else '?',   # RFLAGS.IF
                    'cpl': cpl.group(1) if cpl else '?', 'hlt': hlt.group(1) if hlt else '?'})
    return out


def parse_memory(text):
    """`x/Ngx ADDR`: the quadwords, in order."""
    vals = []
    for ln in text.split('\n'):
        m = re.match(r'\s*[0-9a-f]+:((?:\s+0x[0-9a-f]+)+)\s*$', ln)
        if m:
            vals += [int(v, 16) for v in m.group(1).split()]
    return vals


def parse_lapic(text):
    """`info lapic N`: the local APIC timer's mode and counts, and the vectors in service and
    requested. A vCPU halted with interrupts on and nothing in IRR while its one-shot timer
    has run out (current 0) lost its timer interrupt; a vector stuck in ISR blocks every
    vector of its priority class and below. None when the text has no timer line."""
    t = re.search(r'Timer\s+DCR=\S+.*?initial_count = (\d+) current_count = (\d+)', text)
    if not t:
        return None
    lvtt = re.search(r'^LVTT\s+0x([0-9a-f]+)\s+(.*)$', text, re.M)
    mode = '?'
    if lvtt:
        words = lvtt.group(2).split()
        mode = next((w for w in words if w in ('one-shot', 'periodic', 'tsc-deadline')), '?')
        if int(lvtt.group(1), 16) >> 16 & 1:
            mode += ' masked'

    def vectors(name):
        m = re.search(r'^' + name + r'\s+(.*)$', text, re.M)
        return ' '.join(m.group(1).split()) if m else '?'
    ppr = re.search(r'PPR (0x[0-9a-f]+)', text)
    return {'timer': mode, 'initial': int(t.group(1)), 'current': int(t.group(2)),
            'isr': vectors('ISR'), 'irr': vectors('IRR'), 'ppr': ppr.group(1) if ppr else '?'}


def lapic_summary(cpu, lapic):
    if lapic is None:
        return f'cpu{cpu} lapic: no answer'
    return (f'cpu{cpu} lapic: timer {lapic["timer"]} {lapic["current"]}/{lapic["initial"]} '
            f'ISR {lapic["isr"]} IRR {lapic["irr"]} PPR {lapic["ppr"]}')


STACK_WORDS = 96


def diagnose(sock_path, beat_path, samples=3, gap_s=2.0):
    """Lines describing the hang (for the run's output); the full monitor dumps go to
    beat_path + '.monitor'. Each sample: every vCPU's RIP (named), RFLAGS.IF, CPL and HLT,
    then its local APIC's timer (mode, current/initial count), ISR, IRR and PPR;
    after the first, the code addresses found on each vCPU's stack (a rough backtrace: the
    newest first, with any exception frame's saved RIP among them)."""
    text = open(beat_path, 'rb').read().decode('utf-8', 'replace') if os.path.exists(beat_path) else ''
    beats = Beats(text)
    lines = [f'L1 heartbeat: {beats.count} beats, {len(beats.addrs)} symbols, last: {beats.last or "none"}']
    dump = []
    for n in range(samples):
        try:
            r = monitor(sock_path, ['info cpus', 'info registers -a'])
            cpus = parse_registers(r['info registers -a'])
            # Each vCPU's local APIC (QEMU numbers them as the vCPUs): is a timer interrupt
            # due, pending or in service?
            r.update(monitor(sock_path, [f'info lapic {c["cpu"]}' for c in cpus]))
            lines.append(f'sample {n + 1}: ' + '; '.join(
                f'cpu{c["cpu"]} {beats.name(c["rip"])} RIP={c["rip"]:#x} IF={c["irq_on"]} CPL={c["cpl"]} '
                f'HLT={c["hlt"]}' for c in cpus) + '; ' + '; '.join(
                lapic_summary(c['cpu'], parse_lapic(r.get(f'info lapic {c["cpu"]}', ''))) for c in cpus))
            if n == 0:
                cmds = []
                for c in cpus:
                    if c['rsp'] is not None:
                        cmds += [f'cpu {c["cpu"]}', f'x/{STACK_WORDS}gx {c["rsp"]:#x}']
                stacks = monitor(sock_path, cmds)
                r.update(stacks)
                for c in cpus:
                    key = f'x/{STACK_WORDS}gx {c["rsp"]:#x}'
                    if key in stacks:
                        code = [beats.name(v) for v in parse_memory(stacks[key])]
                        code = [x for x in code if not x.startswith('not ')]
                        lines.append(f'  cpu{c["cpu"]} stack (RSP={c["rsp"]:#x}): ' + (' < '.join(code) or 'no code addresses'))
        except OSError as e:
            lines.append(f'QEMU monitor sample {n + 1}: no answer ({e}): a QEMU thread holds its lock')
            break
        dump.append(f'=== sample {n + 1}\n' + '\n'.join(f'(qemu) {k}\n{v}' for k, v in r.items()))
        if n + 1 < samples:
            time.sleep(gap_s)
    if dump:
        with open(beat_path + '.monitor', 'w') as f:
            f.write('\n'.join(dump))
        lines.append(f'monitor dumps: {beat_path}.monitor')
    return lines
