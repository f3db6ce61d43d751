#!/usr/bin/env python3
"""Tests of hang_diag.py (a hung nested host's heartbeat and QEMU monitor answers), on
synthetic logs and a fake monitor socket. Run: python3 tools/nested/hang_diag_test.py"""
import os
import socket
import sys
import tempfile
import threading
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hang_diag as hd  # noqa: E402

REGS = """CPU#0
RAX=0000000000000000 RBX=ffff888003c40000
RSI=0000000000000000 RDI=ffffd34c80393d98 RBP=0000000000000000 RSP=ffffd34c80003ea0
RIP=ffffffffa1000123 RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0
CPU#1
RIP=0000000000001005 RFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=1
"""


class BeatsTest(unittest.TestCase):
    def test_parse(self):
        b = hd.Beats('ksym ffffffffa1000100 do_thing\r\nksym ffffffffa1000000 _stext\n'
                     'ksym ffffffffc0000000 svm_vcpu_run [kvm_amd]\n'
                     'beat uptime=5.0 memavail_kb=10 case=a\nbeat uptime=10.0 memavail_kb=9 case=b\nbeat upt')
        self.assertEqual(b.count, 3)   # the cut-off last line counts, its text is kept as is
        self.assertEqual(b.last, 'beat upt')
        self.assertEqual(b.name(0xffffffffa1000123), 'do_thing+0x23')   # sorted, not in log order
        self.assertEqual(b.name(0xffffffffa1000000), '_stext+0x0')
        self.assertEqual(b.name(0xffffffffc0000010), 'svm_vcpu_run:kvm_amd+0x10')
        self.assertIn('not L1 kernel code', b.name(0x1005))
        self.assertIn('not L1 kernel code', b.name(0xffffffffa1000100 + hd.MAX_FUNCTION_BYTES))

    def test_garbage(self):
        b = hd.Beats('ksym zz name\nksym 12\n\x00\nksym ffffffff81000000\n')
        self.assertEqual(b.addrs, [])
        self.assertIn('not L1 kernel code', b.name(0xffffffff81000000))


class RegistersTest(unittest.TestCase):
    def test_parse(self):
        self.assertEqual(hd.parse_registers(REGS), [
            {'cpu': 0, 'rip': 0xffffffffa1000123, 'rsp': 0xffffd34c80003ea0, 'irq_on': '1', 'cpl': '0', 'hlt': '0'},
            {'cpu': 1, 'rip': 0x1005, 'rsp': None, 'irq_on': '0', 'cpl': '0', 'hlt': '1'}])

    def test_memory(self):
        self.assertEqual(hd.parse_memory('x/3gx 0x10\nffffd34c80393d98: 0x0000000000000001 0xffffffffb6401199\n'
                                         'ffffd34c80393da8: 0x0000000000000000\n'), [1, 0xffffffffb6401199, 0])


LAPIC = """dumping local APIC state for CPU 1 \r
\r
LVT0\t 0x00010700 active-hi edge  masked                      ExtINT (vec 0)\r
LVTT\t 0x000000ec active-hi edge                 one-shot     Fixed  (vec 236)\r
Timer\t DCR=0x3 (divide by 16) initial_count = 7734416 current_count = 0\r
ISR\t (none)\r
IRR\t 236\r
\r
APR 0x01 TPR 0x10 DFR 0x0f LDR 0x02 PPR 0x10\r
"""


class LapicTest(unittest.TestCase):
    def test_parse(self):
        lapic = hd.parse_lapic(LAPIC.replace('\r', ''))
        self.assertEqual(lapic, {'timer': 'one-shot', 'initial': 7734416, 'current': 0,
                                 'isr': '(none)', 'irr': '236', 'ppr': '0x10'})
        self.assertEqual(hd.lapic_summary(1, lapic), 'cpu1 lapic: timer one-shot 0/7734416 ISR (none) IRR 236 PPR 0x10')

    def test_masked_and_garbage(self):
        masked = LAPIC.replace('0x000000ec', '0x000100ec').replace('\r', '')
        self.assertEqual(hd.parse_lapic(masked)['timer'], 'one-shot masked')
        self.assertIsNone(hd.parse_lapic('unknown command'))
        self.assertEqual(hd.lapic_summary(0, None), 'cpu0 lapic: no answer')


class MonitorTest(unittest.TestCase):
    def fake_monitor(self, path, answer):
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(1)

        def run():
            c, _ = srv.accept()
            c.sendall(b'QEMU 7.2.0 monitor - type \'help\' for more information\r\n(qemu) ')
            buf = b''
            while True:
                d = c.recv(100)
                if not d:
                    break
                buf += d
                while b'\n' in buf:
                    line, buf = buf.split(b'\n', 1)
                    if answer:
                        c.sendall(line + b'\r\n' + answer(line.decode()).encode() + b'(qemu) ')
            c.close()
            srv.close()
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    def test_commands(self):
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, 'm.sock')
            self.fake_monitor(p, lambda c: REGS if c == 'info registers -a' else
                              LAPIC if c.startswith('info lapic') else '* CPU #0: thread_id=1\r\n')
            r = hd.monitor(p, ['info cpus', 'info registers -a', 'info lapic 1'])
            self.assertEqual(hd.parse_lapic(r['info lapic 1'])['irr'], '236')
            self.assertIn('thread_id=1', r['info cpus'])
            self.assertEqual(len(hd.parse_registers(r['info registers -a'])), 2)

    def test_silent_monitor_times_out(self):
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, 'm.sock')
            self.fake_monitor(p, None)
            with self.assertRaises(OSError):
                hd.monitor(p, ['info cpus'], timeout=0.5)

    def test_diagnose_without_monitor(self):
        with tempfile.TemporaryDirectory() as d:
            beat = os.path.join(d, 'beat.log')
            with open(beat, 'w') as f:
                f.write('beat uptime=3 memavail_kb=1 case=x\n')
            lines = hd.diagnose(os.path.join(d, 'absent.sock'), beat, samples=1)
            self.assertIn('1 beats', lines[0])
            self.assertIn('no answer', lines[1])


if __name__ == '__main__':
    unittest.main()
