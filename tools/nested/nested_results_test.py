#!/usr/bin/env python3
"""Tests of the host-side judgement (nested_results.py) on synthetic serial logs.
Run: python3 tools/nested/nested_results_test.py"""
import os
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nested_results as nr  # noqa: E402

CASE = """#!/bin/sh
#@ timeout 100
#@ expect-rc 0
#@ expect-guest cpus=2
#@ expect-guest-range memtotal_kb 400000 524288
#@ expect-cmdline
"""
CL = 'console=ttyS0 reboot=k panic=-1 kestrel.token=boot-x-1234'


def log(guest_cmdline=CL, cpus=2, mem=481180, rc=0, end=True, extra=''):
    lines = ['junk', 'NESTED-L1-UP uptime=3.4', 'NESTED-L1-READY kvm=ok', 'NESTED-CASE-BEGIN boot-x timeout=100',
             f'NESTED-CMDLINE {CL}', '[    0.000000] Linux version 6.1', '[   20.455850] Run /init as init process',
             'KESTREL-GUEST-INIT uptime=2.50',
             f'KESTREL-GUEST cpus={cpus} online=0-1 memtotal_kb={mem} cmdline={guest_cmdline}',
             f'NESTED-KESTREL-EXIT rc={rc} seconds=9.00 to_init_seconds=8.10']
    if end:
        lines.append(f'NESTED-CASE-END boot-x rc={rc} seconds=9.20{extra}')
        lines.append('NESTED-L1-DONE')
    return '\r\n'.join(lines) + '\r\n'


class Judge(unittest.TestCase):
    def run_one(self, text):
        spec = nr.CaseSpec.parse('boot-x.sh', CASE)
        return nr.judge(text, [spec])

    def test_good_run_passes_with_figures(self):
        res = self.run_one(log())
        self.assertTrue(nr.all_passed(res), nr.summary(res))
        self.assertIn('start->guest /init 8.10 s', res.cases[0].figures)
        self.assertIn('guest uptime at /init 2.50 s', res.cases[0].figures)
        self.assertIn('"Run /init" at 20.455850 s', res.cases[0].figures)
        self.assertEqual(nr.summary(res)[-1], '1 passed, 0 failed')

    def test_cmdline_must_match_exactly(self):
        res = self.run_one(log(guest_cmdline=CL + ' initrd=x'))
        self.assertFalse(nr.all_passed(res))
        self.assertIn('/proc/cmdline', res.cases[0].reason)

    def test_cpus_and_memory(self):
        self.assertIn('cpus=', self.run_one(log(cpus=1)).cases[0].reason)
        self.assertIn('outside 400000..524288', self.run_one(log(mem=262144)).cases[0].reason)

    def test_kestrel_exit_code(self):
        res = self.run_one(log(rc=4))
        self.assertIn('kestrel exited 4, expected 0', res.cases[0].reason)

    def test_missing_end_and_timeout(self):
        self.assertIn('no NESTED-CASE-END', self.run_one(log(end=False)).cases[0].reason)
        self.assertIn('timed out', self.run_one(log(extra=' timed-out')).cases[0].reason)

    def test_a_triple_fault_fails_the_case_and_nothing_reruns_it(self):
        res = self.run_one(log(rc=4))
        self.assertFalse(nr.all_passed(res))
        self.assertIn('kestrel exited 4, expected 0', res.cases[0].reason)
        self.assertEqual(nr.summary(res)[-1], '0 passed, 1 failed')

    def test_an_unexpected_kestrel_warning_or_error_fails_the_case(self):
        for line in ('kestrel: warning: virtio-blk queue 0: bad descriptor; device needs reset',
                     'kestrel: error: IRQ 4: Invalid argument'):
            res = self.run_one(log(extra='').replace('NESTED-KESTREL-EXIT', line + '\r\nNESTED-KESTREL-EXIT'))
            self.assertFalse(nr.all_passed(res), line)
            self.assertIn('unexpected kestrel complaint', res.cases[0].reason)
        allowed = nr.CaseSpec.parse('boot-x.sh', CASE + '#@ allow-line kestrel: warning: .*expected here\n')
        text = log().replace('NESTED-KESTREL-EXIT', 'kestrel: warning: expected here\r\nNESTED-KESTREL-EXIT')
        self.assertTrue(nr.all_passed(nr.judge(text, [allowed])))
        # info lines are not complaints
        text = log().replace('NESTED-KESTREL-EXIT', 'kestrel: info: guest powered off\r\nNESTED-KESTREL-EXIT')
        self.assertTrue(nr.all_passed(self.run_one(text)))

    def test_l1_not_up_fails_every_case(self):
        res = self.run_one('NESTED-L1-UP uptime=3\r\nNESTED-L1-FAIL /dev/kvm missing after loading kvm_amd\r\n')
        self.assertFalse(res.l1_up)
        self.assertIn('/dev/kvm missing', res.cases[0].reason)
        self.assertEqual(nr.summary(res)[-1], '0 passed, 1 failed')

    def test_guest_line_keeps_spaces_in_cmdline(self):
        f = nr.parse_guest_line('KESTREL-GUEST cpus=2 memtotal_kb=5 cmdline=a b  c=d')
        self.assertEqual(f, {'cpus': '2', 'memtotal_kb': '5', 'cmdline': 'a b  c=d'})

    def test_bad_directive_is_rejected(self):
        with self.assertRaises(SystemExit):
            nr.CaseSpec.parse('x.sh', '#@ expect-nothing 1\n')


VCASE = """#!/bin/sh
#@ expect-rc 0
#@ expect-value guest.f1 == $l1.f1
#@ expect-value guest.f1 =~ [0-9a-f]{64}
#@ expect-value l1.fsck.rc == 0
#@ expect-value after < $before
#@ l1-binaries /usr/sbin/debugfs /usr/bin/socat?
#@ guest-binaries /usr/sbin/mkfs.ext4
"""
SUM = 'ab' * 32


def vlog(values):
    lines = ['NESTED-L1-UP uptime=3.4', 'NESTED-L1-READY kvm=ok', 'NESTED-CASE-BEGIN v timeout=100',
             'NESTED-KESTREL-EXIT rc=0 seconds=9.00 to_init_seconds=8.10']
    lines += values
    lines += ['NESTED-CASE-END v rc=0 seconds=9.20', 'NESTED-L1-DONE']
    return '\r\n'.join(lines) + '\r\n'


GOOD = [f'KESTREL-VALUE guest.f1 {SUM}', f'NESTED-VALUE l1.f1 {SUM}', 'NESTED-VALUE l1.fsck.rc 0',
        'NESTED-VALUE before 65536', 'NESTED-VALUE after 1024']


class KestrelCounters(unittest.TestCase):
    def test_counters_lines_become_values_and_missing_ones_are_zero(self):
        case = nr.CaseSpec.parse('v.sh', '#@ expect-rc 0\n#@ expect-value kestrel.blk0.flushes >= 1\n'
                                 '#@ expect-value kestrel.blk1.reads[1] == 7\n#@ expect-value kestrel.blk0.io_errors == 0\n'
                                 '#@ expect-value kestrel.run2.blk0.flushes == 2\n')
        lines = ["kestrel: info: virtio-blk '/tmp/a.img' counters: reads=3 flushes=4",
                 "kestrel: info: virtio-blk '/dev/loop0' counters: reads=9 reads[1]=7",
                 'NESTED-KESTREL-EXIT rc=0 seconds=1 to_init_seconds=-1',
                 "kestrel: info: virtio-blk '/tmp/a.img' counters: flushes=2"]
        text = vlog(lines + ['NESTED-KESTREL-EXIT rc=0 seconds=1 to_init_seconds=-1']).replace(
            'NESTED-KESTREL-EXIT rc=0 seconds=9.00 to_init_seconds=8.10\r\n', '', 1)
        r = nr.judge(text, [case]).cases[0]
        self.assertTrue(r.passed, r.reason)
        # A device that printed no counters line is missing, not zero.
        case = nr.CaseSpec.parse('v.sh', '#@ expect-rc 0\n#@ expect-value kestrel.rng0.bytes == 0\n')
        r = nr.judge(vlog(lines), [case]).cases[0]
        self.assertFalse(r.passed)
        self.assertIn('no VALUE line for kestrel.rng0.bytes', r.reason)


class Values(unittest.TestCase):
    def run_one(self, values):
        spec = nr.CaseSpec.parse('v.sh', VCASE)
        return nr.judge(vlog(values), [spec]).cases[0]

    def test_directives_parse(self):
        spec = nr.CaseSpec.parse('v.sh', VCASE)
        self.assertEqual(spec.l1_binaries, ['/usr/sbin/debugfs', '/usr/bin/socat?'])
        self.assertEqual(spec.guest_binaries, ['/usr/sbin/mkfs.ext4'])
        self.assertEqual(spec.expect_values[0], ('guest.f1', '==', '$l1.f1'))

    def test_all_equal_passes_and_shows_integers(self):
        r = self.run_one(GOOD)
        self.assertTrue(r.passed, r.reason)
        self.assertIn('before=65536', r.figures)
        self.assertIn('after=1024', r.figures)

    def test_checksum_mismatch_fails(self):
        r = self.run_one([f'KESTREL-VALUE guest.f1 {"cd" * 32}'] + GOOD[1:])
        self.assertFalse(r.passed)
        self.assertIn('expected guest.f1 == l1.f1=', r.reason)

    def test_missing_value_fails(self):
        r = self.run_one(GOOD[1:])
        self.assertIn('no VALUE line for guest.f1', r.reason)

    def test_regex_and_ordering(self):
        r = self.run_one([f'KESTREL-VALUE guest.f1 xyz', 'NESTED-VALUE l1.f1 xyz'] + GOOD[2:3] +
                         ['NESTED-VALUE before 100', 'NESTED-VALUE after 100'])
        self.assertIn('expected guest.f1 =~', r.reason)
        self.assertIn('expected after < before=', r.reason)
        r = self.run_one(GOOD[:3] + ['NESTED-VALUE before 100', 'NESTED-VALUE after x'])
        self.assertIn('not integers', r.reason)

    def test_key_printed_twice_differently_fails(self):
        r = self.run_one(GOOD + ['NESTED-VALUE l1.fsck.rc 8'])
        self.assertIn('printed with different values', r.reason)

    def test_bad_operator_is_rejected(self):
        with self.assertRaises(SystemExit):
            nr.CaseSpec.parse('x.sh', '#@ expect-value a ~~ b\n')


if __name__ == '__main__':
    unittest.main()
