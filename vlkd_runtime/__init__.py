"""What training and serving both use and neither owns, without torch: the observation transform (`observation`),
the answer arithmetic (`scoring`), the grasp model-dir reader (`grasp_dir`), text encoding of object names through
the teacher's ONNX text tower and tokenizer (`text`, `onnx_session`) and learning a new object as a query vector
(`query_fit`). `.importlinter` layers it under `training` and above `sim`, and forbids it torch, `training` and
`sim`: a serving process imports it."""
