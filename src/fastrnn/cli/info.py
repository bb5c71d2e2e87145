"""``fastrnn info``: what this fastrnn runs on (``fr.show_config()``)."""


def add_parser(commands):
    info = commands.add_parser("info", help="version, kernel level, OpenMP, threads, BLAS",
                               description="Print what this fastrnn runs on: its version "
                                           "and location, Python, the instruction-set "
                                           "level of the kernels (chosen, built, supported "
                                           "by this CPU; FASTRNN_ISA forces one), OpenMP, "
                                           "the kernel threads, the BLAS library and the "
                                           "versions of the dependencies.")
    info.set_defaults(func=info_command)


def info_command(args):
    import fastrnn as fr
    fr.show_config()
    return 0
