"""tfscale: at what data size does distributing a TensorFlow matmul pay off?"""

__version__ = "0.1.0"
