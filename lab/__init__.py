"""The lab: what runs splitedge end to end on one machine, and is not the product.

* :mod:`lab.demo` - ``splitedge demo``: a broker, cloud tail workers and emulated cameras on a real
  bandwidth trace, then the summary and plots;
* :mod:`lab.demo_report` - what the demo's answers say (tables, plots, the estimate / true ratio);
* :mod:`lab.netem` - the kernel link emulation (network namespaces, veth, ``tbf``) the demo can use.

The product packages (``sdk``, ``device_runner``, ``cloud_tail``, ``converter``) never import this package;
it imports them (tests/test_lab_boundary.py checks the direction).
"""
