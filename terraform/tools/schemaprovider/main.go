// Command schemaprovider is a schema-only stand-in for the hashicorp/google and google-beta
// Terraform providers, so that `terraform validate` can run where the provider registry cannot
// be reached.
//
// It serves the provider schema rebuilt by ../provider_schema.py (the layout of `terraform
// providers schema -json`, file named by PAYSTREAM_PROVIDER_SCHEMA) and accepts every
// configuration that fits it. It validates nothing itself and cannot plan or apply: the
// checks are Terraform's own (arguments, blocks, types, references, module wiring). Which
// provider it is comes from its executable name (terraform-provider-google-beta_v...).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hashicorp/terraform-plugin-go/tfprotov5"
	"github.com/hashicorp/terraform-plugin-go/tfprotov5/tf5server"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
)

type jsonAttribute struct {
	Type     json.RawMessage `json:"type"`
	Required bool            `json:"required"`
	Optional bool            `json:"optional"`
	Computed bool            `json:"computed"`
}

type jsonBlockType struct {
	NestingMode string    `json:"nesting_mode"`
	MinItems    int64     `json:"min_items"`
	MaxItems    int64     `json:"max_items"`
	Block       jsonBlock `json:"block"`
}

type jsonBlock struct {
	Attributes map[string]jsonAttribute `json:"attributes"`
	BlockTypes map[string]jsonBlockType `json:"block_types"`
}

type jsonSchema struct {
	Version int64     `json:"version"`
	Block   jsonBlock `json:"block"`
}

type jsonProvider struct {
	Provider          jsonSchema            `json:"provider"`
	ResourceSchemas   map[string]jsonSchema `json:"resource_schemas"`
	DataSourceSchemas map[string]jsonSchema `json:"data_source_schemas"`
}

type jsonFile struct {
	ProviderSchemas map[string]jsonProvider `json:"provider_schemas"`
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func convertBlock(b jsonBlock) (*tfprotov5.SchemaBlock, error) {
	out := &tfprotov5.SchemaBlock{}
	for _, name := range sortedKeys(b.Attributes) {
		a := b.Attributes[name]
		t, err := tftypes.ParseJSONType(a.Type) //nolint:staticcheck // the cty JSON type encoding is what we have
		if err != nil {
			return nil, fmt.Errorf("attribute %s: %w", name, err)
		}
		out.Attributes = append(out.Attributes, &tfprotov5.SchemaAttribute{
			Name: name, Type: t, Required: a.Required, Optional: a.Optional, Computed: a.Computed,
		})
	}
	for _, name := range sortedKeys(b.BlockTypes) {
		bt := b.BlockTypes[name]
		inner, err := convertBlock(bt.Block)
		if err != nil {
			return nil, fmt.Errorf("block %s: %w", name, err)
		}
		nesting := tfprotov5.SchemaNestedBlockNestingModeList
		if bt.NestingMode == "set" {
			nesting = tfprotov5.SchemaNestedBlockNestingModeSet
		}
		out.BlockTypes = append(out.BlockTypes, &tfprotov5.SchemaNestedBlock{
			TypeName: name, Block: inner, Nesting: nesting, MinItems: bt.MinItems, MaxItems: bt.MaxItems,
		})
	}
	return out, nil
}

func convertSchemas(in map[string]jsonSchema) (map[string]*tfprotov5.Schema, error) {
	out := make(map[string]*tfprotov5.Schema, len(in))
	for name, s := range in {
		block, err := convertBlock(s.Block)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out[name] = &tfprotov5.Schema{Version: s.Version, Block: block}
	}
	return out, nil
}

type server struct {
	tfprotov5.ProviderServer // not implemented: plan, apply, read, import (this provider only validates)
	schema                   *tfprotov5.GetProviderSchemaResponse
}

func (s *server) GetMetadata(context.Context, *tfprotov5.GetMetadataRequest) (*tfprotov5.GetMetadataResponse, error) {
	resp := &tfprotov5.GetMetadataResponse{}
	for _, name := range sortedKeys(s.schema.ResourceSchemas) {
		resp.Resources = append(resp.Resources, tfprotov5.ResourceMetadata{TypeName: name})
	}
	for _, name := range sortedKeys(s.schema.DataSourceSchemas) {
		resp.DataSources = append(resp.DataSources, tfprotov5.DataSourceMetadata{TypeName: name})
	}
	return resp, nil
}

func (s *server) GetProviderSchema(context.Context, *tfprotov5.GetProviderSchemaRequest) (*tfprotov5.GetProviderSchemaResponse, error) {
	return s.schema, nil
}

func (s *server) GetFunctions(context.Context, *tfprotov5.GetFunctionsRequest) (*tfprotov5.GetFunctionsResponse, error) {
	return &tfprotov5.GetFunctionsResponse{Functions: map[string]*tfprotov5.Function{}}, nil
}

func (s *server) PrepareProviderConfig(_ context.Context, req *tfprotov5.PrepareProviderConfigRequest) (*tfprotov5.PrepareProviderConfigResponse, error) {
	return &tfprotov5.PrepareProviderConfigResponse{PreparedConfig: req.Config}, nil
}

func (s *server) ValidateResourceTypeConfig(context.Context, *tfprotov5.ValidateResourceTypeConfigRequest) (*tfprotov5.ValidateResourceTypeConfigResponse, error) {
	return &tfprotov5.ValidateResourceTypeConfigResponse{}, nil
}

func (s *server) ValidateDataSourceConfig(context.Context, *tfprotov5.ValidateDataSourceConfigRequest) (*tfprotov5.ValidateDataSourceConfigResponse, error) {
	return &tfprotov5.ValidateDataSourceConfigResponse{}, nil
}

func (s *server) StopProvider(context.Context, *tfprotov5.StopProviderRequest) (*tfprotov5.StopProviderResponse, error) {
	return &tfprotov5.StopProviderResponse{}, nil
}

func load() (*tfprotov5.GetProviderSchemaResponse, error) {
	path := os.Getenv("PAYSTREAM_PROVIDER_SCHEMA")
	if path == "" {
		return nil, fmt.Errorf("PAYSTREAM_PROVIDER_SCHEMA is not set")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var file jsonFile
	if err := json.Unmarshal(raw, &file); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	name := "google"
	if strings.HasPrefix(filepath.Base(os.Args[0]), "terraform-provider-google-beta") {
		name = "google-beta"
	}
	p, ok := file.ProviderSchemas["registry.terraform.io/hashicorp/"+name]
	if !ok {
		return nil, fmt.Errorf("%s: no schema for hashicorp/%s", path, name)
	}
	providerBlock, err := convertBlock(p.Provider.Block)
	if err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	resources, err := convertSchemas(p.ResourceSchemas)
	if err != nil {
		return nil, err
	}
	dataSources, err := convertSchemas(p.DataSourceSchemas)
	if err != nil {
		return nil, err
	}
	return &tfprotov5.GetProviderSchemaResponse{
		Provider:          &tfprotov5.Schema{Block: providerBlock},
		ResourceSchemas:   resources,
		DataSourceSchemas: dataSources,
		Functions:         map[string]*tfprotov5.Function{},
	}, nil
}

func main() {
	schema, err := load()
	if err != nil {
		fmt.Fprintln(os.Stderr, "schemaprovider:", err)
		os.Exit(1)
	}
	name := "registry.terraform.io/hashicorp/google"
	if err := tf5server.Serve(name, func() tfprotov5.ProviderServer { return &server{schema: schema} }); err != nil {
		fmt.Fprintln(os.Stderr, "schemaprovider:", err)
		os.Exit(1)
	}
}
