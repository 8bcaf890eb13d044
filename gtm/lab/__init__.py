"""`gtm lab`: regions, DNS nodes and clients as real network hosts on one machine.

gtm.lab.plan decides (pure), gtm.lab.network and gtm.lab.system act (namespaces, veths,
nftables), gtm.lab.delay is the userspace delay line, gtm.lab.supervisor runs a lab
(`gtm lab up`), gtm.lab.teardown removes one (`gtm lab down`), gtm.lab.faults drives a
running one from another process and gtm.lab.state is the description they share.
"""
