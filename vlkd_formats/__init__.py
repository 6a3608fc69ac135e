"""The ground floor of vlkd_ros: on-disk formats and contracts every stage shares (no torch, ROS or CLI imports).

`errors` (the one library error type), `atomic_io` (crash-safe writes), `config` (typed job configs),
`dataset_dir` (what sim/ writes), `image_codec` (the one image codec: PNG frames, any image file read as RGB),
`model_dir` (what training writes for serving: the layout, the card and its one loader), `object_registry` (objects
a grasp model knows), `split` (the ID/OOD label split).
"""
