"""Host-side judgement of a nested test run: splits the L1 serial log into per-case sections
(NESTED-CASE-BEGIN/END, written by tools/nested/l1-init.sh) and checks each against the `#@`
expectations in its case script. Directives (one per line, anywhere in the script):
  #@ timeout S                    L1 watchdog for the whole case (default 300)
  #@ expect-rc N                  every kestrel run in the case exited N (NESTED-KESTREL-EXIT)
  #@ expect-script-rc N           the case script's own exit status (default: expect-rc, else 0)
  #@ expect-guest KEY=VALUE       the guest's KESTREL-GUEST line has KEY=VALUE
  #@ expect-guest-range KEY LO HI LO <= guest KEY <= HI (integers)
  #@ expect-cmdline               guest cmdline= equals the NESTED-CMDLINE boot_guest gave
  #@ expect-line REGEX            some output line matches (re.search)
  #@ reject-line REGEX            no output line matches
  #@ guest-modules NAME...        modules the shared L2 initramfs must load (union over cases)
  #@ guest-binaries PATH...       host executables (+ shared libraries) for the L2 initramfs
  #@ l1-binaries PATH...          host executables (+ shared libraries) for L1 ('?' = optional)
  #@ l1-python                    Debian's python3 and its standard library in L1
  #@ allow-line REGEX             a `kestrel: warning:`/`kestrel: error:` line the case expects
                                  (every other such line fails the case)
  #@ expect-value KEY OP OPERAND  a value line's KEY compared with a literal or with $OTHER-KEY;
                                  OP is one of == != < <= > >= =~ (regex, re.fullmatch); the
                                  ordering OPs need integers on both sides
kestrel's exit log lines `virtio-<kind> ... counters: name=v ...` give values
`kestrel.<kind><n>.<name>` (see kestrel_counter_values; a counter a device left out is 0).
Value lines: `KESTREL-VALUE key value` (guest) or `NESTED-VALUE key value` (L1 case script);
the value is the rest of the line. A key printed twice with different values fails the case
(each side must produce each figure once, so nothing is compared against a stale one).
"""
import dataclasses
import os
import re


VALUE_OPS = ('==', '!=', '<', '<=', '>', '>=', '=~')
KESTREL_COMPLAINT = re.compile(r'kestrel: (warning|error|critical):')
KESTREL_COUNTERS = re.compile(r'kestrel: info: virtio-(\w+)\b.*? counters:(.*)$')
VALUE_LINE = re.compile(r'(?:KESTREL|NESTED)-VALUE (\S+)(?: (.*))?$')


@dataclasses.dataclass
class CaseSpec:
    name: str
    timeout: int = 300
    expect_rc: int | None = None
    expect_script_rc: int | None = None
    guest_eq: list = dataclasses.field(default_factory=list)
    guest_range: list = dataclasses.field(default_factory=list)
    expect_cmdline: bool = False
    expect_lines: list = dataclasses.field(default_factory=list)
    reject_lines: list = dataclasses.field(default_factory=list)
    guest_modules: list = dataclasses.field(default_factory=list)
    guest_binaries: list = dataclasses.field(default_factory=list)
    l1_binaries: list = dataclasses.field(default_factory=list)
    l1_python: bool = False
    allow_lines: list = dataclasses.field(default_factory=list)
    expect_values: list = dataclasses.field(default_factory=list)

    @staticmethod
    def parse(path, text=None):
        if text is None:
            with open(path) as f:
                text = f.read()
        spec = CaseSpec(os.path.basename(path)[:-3] if path.endswith('.sh') else os.path.basename(path))
        for n, line in enumerate(text.splitlines(), 1):
            if not line.startswith('#@'):
                continue
            word, _, rest = line[2:].strip().partition(' ')
            rest = rest.strip()
            try:
                if word == 'timeout':
                    spec.timeout = int(rest.split()[0])
                elif word == 'expect-rc':
                    spec.expect_rc = int(rest)
                elif word == 'expect-script-rc':
                    spec.expect_script_rc = int(rest)
                elif word == 'expect-guest':
                    key, _, val = rest.partition('=')
                    spec.guest_eq.append((key, val))
                elif word == 'expect-guest-range':
                    key, lo, hi = rest.split()
                    spec.guest_range.append((key, int(lo), int(hi)))
                elif word == 'expect-cmdline':
                    spec.expect_cmdline = True
                elif word == 'expect-line':
                    spec.expect_lines.append(re.compile(rest))
                elif word == 'reject-line':
                    spec.reject_lines.append(re.compile(rest))
                elif word == 'guest-modules':
                    spec.guest_modules += rest.split()
                elif word == 'guest-binaries':
                    spec.guest_binaries += rest.split()
                elif word == 'l1-binaries':
                    spec.l1_binaries += rest.split()
                elif word == 'l1-python':
                    spec.l1_python = True
                elif word == 'allow-line':
                    spec.allow_lines.append(re.compile(rest))
                elif word == 'expect-value':
                    key, op, operand = rest.split(None, 2)
                    if op not in VALUE_OPS:
                        raise ValueError(f'unknown operator {op!r}')
                    if op == '=~':
                        re.compile(operand)
                    spec.expect_values.append((key, op, operand))
                else:
                    raise ValueError(f'unknown directive {word!r}')
            except (ValueError, re.error) as e:
                raise SystemExit(f'{path}:{n}: bad #@ line: {e}')
        return spec


@dataclasses.dataclass
class CaseResult:
    name: str
    passed: bool
    reason: str
    figures: str = ''
    output: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class RunResult:
    l1_up: bool
    l1_problem: str
    cases: list


def parse_guest_line(line):
    """`KESTREL-GUEST k=v k=v cmdline=<rest of line>` -> dict (cmdline keeps its spaces)."""
    body = line.split('KESTREL-GUEST ', 1)[1]
    fields = {}
    head, sep, cmdline = body.partition('cmdline=')
    for tok in head.split():
        k, _, v = tok.partition('=')
        fields[k] = v
    if sep:
        fields['cmdline'] = cmdline
    return fields


def split_sections(lines):
    """{name: (output lines, end line or None)} in log order."""
    sections, current = {}, None
    for ln in lines:
        m = re.match(r'NESTED-CASE-BEGIN (\S+)', ln)
        if m:
            current = m.group(1)
            sections[current] = ([], None)
            continue
        m = re.match(r'NESTED-CASE-END (\S+)', ln)
        if m and m.group(1) == current:
            sections[current] = (sections[current][0], ln)
            current = None
            continue
        if current:
            sections[current][0].append(ln)
    return sections


def kestrel_counter_values(out):
    """kestrel's exit log has one `<device> counters: name=v name[q]=v ...` line per virtio
    device (non-zero counters only). They become values `kestrel.<kind><n>.<name>` (n counts
    devices of a kind in PCI order: blk0, blk1) for the first kestrel run of a case and
    `kestrel.run<k>.<kind><n>.<name>` for run k >= 2, plus `kestrel[.run<k>].<kind><n>` = seen."""
    values, run, seen = {}, 1, {}
    for l in out:
        if l.startswith('NESTED-KESTREL-EXIT '):
            run, seen = run + 1, {}
            continue
        m = KESTREL_COUNTERS.search(l)
        if not m:
            continue
        kind = m.group(1)
        n = seen.get(kind, 0)
        seen[kind] = n + 1
        prefix = ('kestrel.' if run == 1 else f'kestrel.run{run}.') + f'{kind}{n}'
        values[prefix] = 'seen'
        for tok in m.group(2).split():
            k, _, v = tok.partition('=')
            values[f'{prefix}.{k}'] = v
    return values


def collect_values(out):
    """{key: value} from the value lines and kestrel's counters, plus {key: [values]} for keys
    seen with two values."""
    values, clashes = kestrel_counter_values(out), {}
    for l in out:
        m = VALUE_LINE.match(l.strip())
        if not m:
            continue
        key, val = m.group(1), (m.group(2) or '').strip()
        if key in values and values[key] != val:
            clashes.setdefault(key, [values[key]]).append(val)
        values[key] = val
    return values, clashes


def check_values(spec, values, clashes):
    problems, missing = [], []
    for key, seen in clashes.items():
        problems.append(f'value {key} printed with different values {seen}')
    def counter_default(k):
        # A counter missing from a device's counters line was zero.
        dev = k.rsplit('.', 1)[0]
        if k.startswith('kestrel.') and k not in values and values.get(dev) == 'seen':
            values[k] = '0'
    for key, op, operand in spec.expect_values:
        ref = op != '=~' and operand.startswith('$')
        counter_default(key)
        if ref:
            counter_default(operand[1:])
        absent = [k for k in (key, operand[1:] if ref else None) if k and k not in values]
        if absent:
            missing += [k for k in absent if k not in missing]
            continue
        left = values[key]
        if ref:
            right = values[operand[1:]]
        else:
            right = operand
        if op == '=~':
            ok = re.fullmatch(right, left) is not None
        elif op in ('==', '!='):
            ok = (left == right) == (op == '==')
        else:
            try:
                a, b = int(left), int(right)
            except ValueError:
                problems.append(f'{key}={left!r} {op} {right!r}: not integers')
                continue
            ok = {'<': a < b, '<=': a <= b, '>': a > b, '>=': a >= b}[op]
        if not ok:
            shown = f'{operand[1:]}={right!r}' if ref else repr(right)
            problems.append(f'expected {key} {op} {shown}, got {key}={left!r}')
    if missing:
        problems.append('no VALUE line for ' + ', '.join(missing))
    return problems


def check_case(spec, out, end):
    problems = []
    exits = [dict(kv.split('=', 1) for kv in l.split()[1:] if '=' in kv)
             for l in out if l.startswith('NESTED-KESTREL-EXIT ')]
    guest_lines = [l for l in out if 'KESTREL-GUEST ' in l and 'cmdline=' in l]
    guest = parse_guest_line(guest_lines[-1]) if guest_lines else None
    given = [l[len('NESTED-CMDLINE '):] for l in out if l.startswith('NESTED-CMDLINE ')]
    uptime = [l.split('uptime=', 1)[1].split()[0] for l in out if 'KESTREL-GUEST-INIT uptime=' in l]

    figs = []
    for e in exits:
        f = f"kestrel {e.get('seconds', '?')} s"
        if e.get('to_init_seconds', '-1') != '-1':
            f += f", start->guest /init {e['to_init_seconds']} s (L1 clock)"
        figs.append(f)
    if uptime:
        figs.append(f'guest uptime at /init {uptime[-1]} s')
    # printk stamps run on the guest's sched_clock, /proc/uptime on its boot clock; under nested
    # TCG they disagree, so both are shown rather than trusting either.
    run_init = [m.group(1) for l in out for m in [re.match(r'\[\s*([0-9.]+)\] Run /init as init process', l)] if m]
    if run_init:
        figs.append(f'guest printk "Run /init" at {run_init[-1]} s')

    if end is None:
        problems.append('no NESTED-CASE-END (L1 died, hung or hit the overall timeout)')
    else:
        if 'timed-out' in end.split():
            problems.append(f'timed out after {spec.timeout} s (L1 watchdog)')
        m = re.search(r'seconds=(\S+)', end)
        if m:
            figs.append(f'case {m.group(1)} s')
        m = re.search(r'rc=(-?\d+)', end)
        script_rc = int(m.group(1)) if m else None
        want = spec.expect_script_rc if spec.expect_script_rc is not None else (
            spec.expect_rc if spec.expect_rc is not None else 0)
        if script_rc != want and 'timed-out' not in end.split():
            problems.append(f'case script exited {script_rc}, expected {want}')
    if spec.expect_rc is not None:
        if not exits:
            problems.append('kestrel never finished (no NESTED-KESTREL-EXIT)')
        for e in exits:
            if e.get('rc') != str(spec.expect_rc):
                problems.append(f"kestrel exited {e.get('rc')}, expected {spec.expect_rc}")
    needs_guest = spec.guest_eq or spec.guest_range or spec.expect_cmdline
    if needs_guest and guest is None:
        problems.append('guest never printed its KESTREL-GUEST line (did not reach /init)')
    if guest is not None:
        for key, val in spec.guest_eq:
            if guest.get(key) != val:
                problems.append(f'guest {key}={guest.get(key)!r}, expected {val!r}')
        for key, lo, hi in spec.guest_range:
            try:
                v = int(guest.get(key, ''))
                if not lo <= v <= hi:
                    problems.append(f'guest {key}={v} outside {lo}..{hi}')
            except ValueError:
                problems.append(f'guest {key}={guest.get(key)!r} is not a number')
        if spec.expect_cmdline:
            if not given:
                problems.append('no NESTED-CMDLINE (case did not use boot_guest)')
            elif guest.get('cmdline') != given[-1]:
                problems.append(f"guest /proc/cmdline {guest.get('cmdline')!r} != given {given[-1]!r}")
    for rx in spec.expect_lines:
        if not any(rx.search(l) for l in out):
            problems.append(f'no output line matches /{rx.pattern}/')
    # kestrel's own complaints: a case that does not expect one (allow-line) fails on it, so
    # a device that logged a guest error or a dropped completion cannot pass unnoticed.
    for l in out:
        if KESTREL_COMPLAINT.search(l) and not any(rx.search(l) for rx in spec.allow_lines):
            problems.append(f'unexpected kestrel complaint: {l.strip()[:160]!r}')
            break
    for rx in spec.reject_lines:
        bad = next((l for l in out if rx.search(l)), None)
        if bad is not None:
            problems.append(f'output has /{rx.pattern}/: {bad.strip()[:120]!r}')
    values, clashes = collect_values(out)
    problems += check_values(spec, values, clashes)
    # Integer figures (sizes, counts, exit codes) are worth seeing even when they pass.
    figs += [f'{k}={v}' for k, v in values.items() if re.fullmatch(r'-?\d+', v)]
    if guest is not None and not problems:
        reason = f"guest cpus={guest.get('cpus')} memtotal_kb={guest.get('memtotal_kb')}"
        if spec.expect_values:
            reason += f', {len(spec.expect_values)} value checks'
    else:
        reason = '; '.join(problems) if problems else 'ok'
    return CaseResult(spec.name, not problems, reason, ', '.join(figs), out)


def judge(text, specs, host_stamps=None, overall_timeout=False):
    lines = [l.replace('\r', '') for l in text.split('\n')]
    ready = any(l.startswith('NESTED-L1-READY') for l in lines)
    fail = next((l for l in lines if l.startswith('NESTED-L1-FAIL')), None)
    if not ready:
        problem = fail[len('NESTED-L1-FAIL '):] if fail else (
            'L1 never reached its /init' if not any(l.startswith('NESTED-L1-UP') for l in lines)
            else 'L1 did not get ready')
        if overall_timeout:
            problem += ' (overall timeout)'
        return RunResult(False, problem, [CaseResult(s.name, False, f'L1 did not come up: {problem}') for s in specs])
    sections = split_sections(lines)
    results = []
    for s in specs:
        if s.name not in sections:
            why = 'never started (L1 died or overall timeout before it)'
            results.append(CaseResult(s.name, False, why))
            continue
        out, end = sections[s.name]
        r = check_case(s, out, end)
        if host_stamps and ('CASE-BEGIN', s.name) in host_stamps and ('CASE-END', s.name) in host_stamps:
            took = host_stamps[('CASE-END', s.name)] - host_stamps[('CASE-BEGIN', s.name)]
            r.figures = (r.figures + ', ' if r.figures else '') + f'host wall {took:.1f} s'
        results.append(r)
    return RunResult(True, '', results)


def all_passed(res):
    return res.l1_up and all(r.passed for r in res.cases)


def summary(res):
    out = []
    if not res.l1_up:
        out.append(f'L1 FAILED: {res.l1_problem}')
    for r in res.cases:
        line = f"{'PASS' if r.passed else 'FAIL'} {r.name}: {r.reason}"
        if r.figures:
            line += f' [{r.figures}]'
        out.append(line)
        if not r.passed and r.output:
            tail = [l for l in r.output if l.strip()][-25:]
            out.append('    last output lines:')
            out += ['    | ' + l for l in tail]
    passed = sum(r.passed for r in res.cases)
    out.append(f'{passed} passed, {len(res.cases) - passed} failed')
    return out
