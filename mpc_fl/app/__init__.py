"""The application: everything that reads argv or files, writes reports, or starts processes.

:mod:`~mpc_fl.app.cli` parses a command line into a typed job (:mod:`~mpc_fl.app.jobs`),
:mod:`~mpc_fl.app.party` runs one party's job, :mod:`~mpc_fl.app.local` runs every party of a
job on this machine (:mod:`~mpc_fl.app.launch` starts and watches the processes),
:mod:`~mpc_fl.app.serving` scores applications with saved model parts (:mod:`~mpc_fl.app.store`),
and :mod:`~mpc_fl.app.demo` tells the SME story end to end. Nothing below this package imports it.
"""
