"""Preparation commands: ``sevnet-hf prepare bp4d|disfa|bp4dplus|folder|synthetic``.

Each module reads one source layout, yields :class:`sevnet_hf.data.schema.FrameRecord` units and hands them to
:func:`sevnet_hf.data.schema.prepare_dataset`, which aligns, writes and reports. Each has ``main(argv=None)``.
"""
