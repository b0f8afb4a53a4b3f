"""One module per algorithm family; every module here is imported by ``losses.registry``."""
