"""What training and serving both use and neither owns, without torch: learning a new object as a query vector
(`vlkd_runtime.query_fit`). `.importlinter` layers it under `training` and above `sim`: it imports neither."""
