"""What the model sees as similar: its embeddings, their projections, nearest neighbours
and near-duplicates."""
