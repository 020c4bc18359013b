"""Anatomy on dental panoramic radiographs: the mandible's inferior border, per-image ROI
placement, and the mandibular cortical width (MCW). Plain functions on arrays."""
