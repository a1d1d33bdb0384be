"""The one definition of every recstream feature: schemas, validation, state
algebras and example building. Engine-free: stdlib, numpy and pyarrow only."""
