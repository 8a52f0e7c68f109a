"""Tests of the Flickr30k Entities reader and the object-attention plots."""
